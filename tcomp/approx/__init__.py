"""approx"""
