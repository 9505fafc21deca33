"""Kaggle: kernels built from the notebooks (`kernels`, their first cell `install_cell`), where
Kaggle mounts their inputs and how they are found (`layout`), wheel sets for the offline image
(`wheels`, `wheel_check`), the image's facts (`image`) and the Kaggle CLI flows (`commands`)."""


def __getattr__(name: str):
    """`lmsys_pref.kaggle.cli_main` and the other names of the old `kaggle` module (now
    `kaggle.commands`) keep working for one release, with a DeprecationWarning."""
    import importlib
    import importlib.util
    import warnings

    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: no warning
        return importlib.import_module(f".{name}", __name__)
    commands = importlib.import_module(".commands", __name__)
    if not hasattr(commands, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"lmsys_pref.kaggle.{name} is now lmsys_pref.kaggle.commands.{name}",
                  DeprecationWarning, stacklevel=2)
    return getattr(commands, name)
