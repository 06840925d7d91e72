from camenn.cli import main

main()
