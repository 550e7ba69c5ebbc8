from sublevel.cli import main

raise SystemExit(main())
