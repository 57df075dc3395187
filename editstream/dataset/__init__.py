"""The sink topic as a dataset: export, the dataset card, the report and its plots."""
