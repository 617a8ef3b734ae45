"""Evaluation: datasets with expert masks, the click simulator, the box and click protocols, their reports."""
