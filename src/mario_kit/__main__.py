from mario_kit.cli import main

main()
