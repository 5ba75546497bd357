"""``python -m sparseae`` runs the command line."""

from sparseae.cli.main import main

if __name__ == "__main__":
    main(prog_name="sparseae")
