from stroke_seg.cli import main

raise SystemExit(main())
