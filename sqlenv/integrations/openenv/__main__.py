from sqlenv.integrations.openenv.server import main

main()
