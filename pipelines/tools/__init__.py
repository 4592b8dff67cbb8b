"""Tools over a written dataset: validate, export, preview; the pose benchmark scorer."""
