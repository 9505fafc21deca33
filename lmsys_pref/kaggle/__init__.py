"""Kaggle: kernels built from the notebooks (`kernels`), wheel sets for the offline image
(`wheels`, `wheel_check`), the image's facts (`image`) and the Kaggle CLI flows (`commands`)."""


def __getattr__(name: str):
    """`lmsys_pref.kaggle.cli_main` and the other names of the old `kaggle` module (now
    `kaggle.commands`) keep working for one release, with a DeprecationWarning."""
    import importlib
    import warnings

    commands = importlib.import_module(".commands", __name__)
    if name.startswith("__") or not hasattr(commands, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"lmsys_pref.kaggle.{name} is now lmsys_pref.kaggle.commands.{name}",
                  DeprecationWarning, stacklevel=2)
    return getattr(commands, name)
