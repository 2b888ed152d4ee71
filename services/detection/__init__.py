"""Detection, pure: features of windows and flows, evidence of hostility, the model files, rule
decisions.

    features    per-flow, per-source and per-destination window features; the source horizon
    sketch      distinct counts (linear counting) and the shared 64-bit hash
    evidence    evidence of hostility per window and scope (marks, measures, answers)
    watch       a source's own evidence measures over its recent windows (SourceWatch)
    bounds      evidence bounds calibrated on benign captures
    estimators  the Isolation Forest variant the shipped model uses (flat, fast scoring)
    model       model files (joblib + JSON metadata), verified before unpickling; Detector
    detect      a scored window + its evidence -> Rule suggestions with their reasons
    drift       the hourly share of flow-windows above threshold and rules fired, vs a band

Used alike by the scorer, replay/evaluation and training. Imports: services.common,
services.records, numpy, scikit-learn and joblib. Never Kafka, faust or BCC.
"""
