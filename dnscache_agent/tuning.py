"""Cache tuning derived from instance facts, by formulas documented here and in the README.
Pure: values in, values out."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024

#: What an image built with `--root` is tuned for: the build host is not the instance, and the
#: instance type is not known yet, so the image gets the smallest instance's numbers (a 512 MiB
#: t4g.nano: 32 MiB of cache, 1000 recursive clients), which are safe on any instance. The
#: first boot's plan derives from the real CPUs and memory, and the repair applies it.
#: Settings that fix `max_cache_size_mb` / `recursive_clients` win here as everywhere.
FIRST_BOOT_CPUS = 1
FIRST_BOOT_MEMORY_BYTES = 512 * MIB


@dataclass(frozen=True)
class Tuning:
    """The numbers rendered into named's options."""

    max_cache_size_mb: int
    recursive_clients: int
    clients_per_query: int
    max_clients_per_query: int


def derive(cpus: int, memory_bytes: int, *, max_cache_size_mb: int | None = None,
           recursive_clients: int | None = None) -> Tuning:
    """Derive tuning from CPU count and memory; explicit settings win.

    - max-cache-size: 1/16 of memory, at least 32 MiB, at most 2 GiB. A host cache holds the
      names one instance uses (thousands, not millions); 1/16 leaves the application its memory
      on a 512 MiB t4g.nano and stops growing where more cache no longer raises the hit ratio.
    - recursive-clients: 1000 per vCPU, 1000..10000. Each outstanding cache miss holds one; a
      cold-start burst on a busy host must queue, not be refused.
    - clients-per-query / max-clients-per-query: identical in-flight queries share one upstream
      fetch. bind's defaults (10/100) drop the 101st waiter; we let up to recursive-clients wait,
      so a burst for one name costs one packet upstream, not a SERVFAIL.
    """
    mem_mb = max(memory_bytes // MIB, 1)
    cache = max_cache_size_mb or min(max(mem_mb // 16, 32), 2048)
    rc = recursive_clients or min(max(1000 * max(cpus, 1), 1000), 10000)
    return Tuning(
        max_cache_size_mb=int(cache),
        recursive_clients=int(rc),
        clients_per_query=10,
        max_clients_per_query=int(rc),
    )
