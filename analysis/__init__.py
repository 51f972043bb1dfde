"""Crystal QC analysis: pure Python on numpy arrays (never imports streamlit).

Data flows one way: image bytes -> io -> preprocess -> detector -> exclude -> measure -> stats -> report.
"""
