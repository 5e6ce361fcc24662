"""
Let a benchmark run as a script (C{python bench/http.py}) import as the
package does: Python puts this folder first on the path, where C{http.py}
would stand in for the standard library's C{http} package, and leaves the
repository out. Importing this module, from that folder, fixes both.
"""

import sys
from pathlib import Path

_FOLDER = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _FOLDER]
sys.path.insert(0, str(_FOLDER.parent))
