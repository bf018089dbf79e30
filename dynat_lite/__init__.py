"""dynat-lite: Dynamic Label Adversarial Training (DYNAT), step by step.

Modules, in the order data flows: ``data`` -> ``models`` -> ``labels`` / ``attacks`` ->
``methods`` -> ``train`` -> ``evaluate``; ``viz`` and ``widgets`` draw what ``train`` recorded.
"""
__version__ = "0.1.0"
