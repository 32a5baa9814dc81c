"""`python -m kadnode ...` runs the kadnode command line."""

from kadnode.cli import main

if __name__ == "__main__":
    main(prog_name="kadnode")
