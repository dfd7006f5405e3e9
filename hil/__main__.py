from hil.cli import main

main()
