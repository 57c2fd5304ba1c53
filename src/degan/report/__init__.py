"""Reports of runs: tables, sample grids."""

from .grid import make_grid, save_grid
from .summary import collect, table, write_report

__all__ = ["make_grid", "save_grid", "collect", "table", "write_report"]
