from ai_employee.cli import main

main()
