"""Views of findings and facts: they render models and decide nothing."""
