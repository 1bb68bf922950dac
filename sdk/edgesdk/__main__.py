from edgesdk.cli.app import main

raise SystemExit(main())
