"""testinfra checks shipped with the agent, for image pipelines (Packer and the like).

Run them against any host testinfra reaches::

    pytest --hosts=ssh://builder --pyargs dnscache_agent.checks
    pytest --hosts=podman://NAME --pyargs dnscache_agent.checks
    pytest --hosts=local:// --pyargs dnscache_agent.checks      # on the image itself

Each fact is computed once, by `dnscache-agent verify --json` on the target host (the same
code the `verify` command and the daemon run); these checks report it one test per fact and
add only what verify cannot see of itself (the agent's own service). Options, or environment
variables for pipelines that cannot pass them, let an image that differs on purpose pass:
see `options.py` (`pytest --help`, section "dnscache-agent checks").
"""
