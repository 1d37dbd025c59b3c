from models.summary import main

main()
