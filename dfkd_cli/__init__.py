"""dfkd: data-free knowledge distillation of regression networks (Zhou & Chiam 2023)."""

__version__ = "0.1.0"
