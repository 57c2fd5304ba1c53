"""Reports of runs: tables, the FID-vs-remaining-weights plot, sample grids."""

from .grid import make_grid, save_grid
from .plots import fid_vs_density
from .summary import collect, table, write_report

__all__ = ["make_grid", "save_grid", "collect", "table", "write_report", "fid_vs_density"]
