"""Kaggle: kernels built from the notebooks (`kernels`, their first cell `install_cell`), where
Kaggle mounts their inputs and how they are found (`layout`), wheel sets for the offline image
(`wheels`, `wheel_check`), the image's facts (`image`) and the Kaggle CLI flows (`commands`)."""
