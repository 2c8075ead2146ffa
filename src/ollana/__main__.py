from ollana.cli import main

main()
