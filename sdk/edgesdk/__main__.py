from edgesdk.cli import main

raise SystemExit(main())
