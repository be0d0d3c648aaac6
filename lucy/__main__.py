from lucy.cli import main

raise SystemExit(main())
