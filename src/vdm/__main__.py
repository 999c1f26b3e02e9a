from vdm.cli.main import app

app(prog_name="vdm")
