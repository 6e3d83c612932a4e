"""Atmosphere tables: zenith opacity and emission temperature vs (ground pressure, pwv, frequency).

* :mod:`.table` — :class:`AtmosphereTable`, :class:`PwvSlab`, :func:`from_linear_form` (pure numpy);
* :mod:`.tableio` — save/load, CCAT linear tables, the shipped default table;
* :mod:`.am_builder` — building tables with Paine's am (optional dependency ``am-python``).
"""

from .table import (
    H_PLANCK,
    K_BOLTZMANN,
    T_CMB,
    AtmosphereTable,
    PwvSlab,
    from_linear_form,
    planck_j,
    planck_j_inverse,
)
from .tableio import (
    default_table_path,
    load_default_table,
    load_linear_table,
    load_table,
    save_table,
)

__all__ = [
    "H_PLANCK",
    "K_BOLTZMANN",
    "T_CMB",
    "AtmosphereTable",
    "PwvSlab",
    "default_table_path",
    "from_linear_form",
    "load_default_table",
    "load_linear_table",
    "load_table",
    "planck_j",
    "planck_j_inverse",
    "save_table",
]
