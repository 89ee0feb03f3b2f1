from dnscache_agent.pacer.main import main

raise SystemExit(main())
