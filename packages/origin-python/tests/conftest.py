import sys
from pathlib import Path

# tests/gateway.py, importable as `gateway`.
sys.path.insert(0, str(Path(__file__).parent))
