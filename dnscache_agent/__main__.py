from dnscache_agent.cli import main

raise SystemExit(main())
