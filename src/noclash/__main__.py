from noclash.cli import main

main()
