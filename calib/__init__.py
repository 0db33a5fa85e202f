"""adafv.calib"""
