"""Value and risk models: RFM, lifetime value, churn, refill and no-show risk (docs/models.md).

One model family per module; each merges the user's config over its defaults, saves the fitted model with
a card (config, family version, careloop version, data hash, report) and refuses to load a model whose
card does not match what the caller expects (`careloop.models.base`). Scores are written as traits.
"""
