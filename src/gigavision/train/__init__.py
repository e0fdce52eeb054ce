"""Training: recipes, torch datasets over dataset versions, augmentation, the Lightning module and trainer,
evaluation, sweeps and the training/evaluation jobs."""
