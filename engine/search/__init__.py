"""Layout search: measure each layer's sensitivity once, then choose formats under any bit budget."""
