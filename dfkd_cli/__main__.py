from dfkd_cli.cli import main

main()
