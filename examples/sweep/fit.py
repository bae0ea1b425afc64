"""Fit a polynomial of one degree to noisy samples of y = 1 + 2x - 3x^2 and print
the fit's error as one JSON line (one run of the `sweep` pipeline's grid).

    python3 fit.py DEGREE NOISE SEED POINTS

Least squares by the normal equations, standard library only. A degree that the
points cannot determine (POINTS <= DEGREE) is a bad grid cell: exit 2.
"""

import json
import random
import sys


def solve(a, b):
    """Gaussian elimination with partial pivoting: a x = b."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-12:
            raise ValueError("singular system")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def main():
    degree, noise, seed, points = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if points <= degree:
        print(f"degree {degree} needs more than {degree} points, got {points}", file=sys.stderr)
        sys.exit(2)
    rng = random.Random(seed)
    xs = [-1 + 2 * i / (points - 1) for i in range(points)]
    ys = [1 + 2 * x - 3 * x * x + rng.gauss(0, noise) for x in xs]
    k = degree + 1
    a = [[sum(x ** (i + j) for x in xs) for j in range(k)] for i in range(k)]
    b = [sum(y * x ** i for x, y in zip(xs, ys)) for i in range(k)]
    coef = solve(a, b)
    sse = sum((y - sum(c * x ** i for i, c in enumerate(coef))) ** 2 for x, y in zip(xs, ys))
    rmse = (sse / points) ** 0.5
    print(json.dumps({"degree": degree, "noise": noise, "seed": seed, "rmse": round(rmse, 3)}))


main()
