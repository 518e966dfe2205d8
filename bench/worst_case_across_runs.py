"""Moved: ``landscape worst-case`` (evaluator/across_runs.py). Kept so the commands in older notes still run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from landscape_cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["worst-case", *sys.argv[1:]]))
