"""raycluster"""
