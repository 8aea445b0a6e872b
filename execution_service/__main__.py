from execution_service.cli import main

main()
