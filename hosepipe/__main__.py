from hosepipe.cli import main

main()
