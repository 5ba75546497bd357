"""``python -m sparseae`` runs the command line."""

from sparseae.cli import main

if __name__ == "__main__":
    main()
