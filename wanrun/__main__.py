from wanrun.cli import main

raise SystemExit(main())
