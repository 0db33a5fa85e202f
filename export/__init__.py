"""adafv.export"""
