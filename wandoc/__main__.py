from wandoc.cli import main

main()
