"""What the features are for: stacked models, process monitoring, graph communities, and a
scikit-learn estimator for pipelines."""
