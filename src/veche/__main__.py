from veche.cli import main

main()
