"""Detection, pure: features of windows and flows, the model files, rule decisions.

    features    per-flow, per-source and per-destination window features; the source horizon
    estimators  the Isolation Forest variant the shipped model uses
    model       model files (joblib + JSON metadata), verified before unpickling; Detector
    detect      a scored window -> Rule suggestions with their reasons

Used alike by the scorer, replay/evaluation and training. Imports: services.common,
services.records, numpy, scikit-learn and joblib. Never Kafka, faust or BCC.
"""
