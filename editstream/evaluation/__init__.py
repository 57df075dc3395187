"""Model evaluation tools: `editstream scorecard` (scorecard.py) reads eval records and says
whether a candidate may replace the baseline."""
