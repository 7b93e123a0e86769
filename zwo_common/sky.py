"""The little positional astronomy a FITS header needs: J2000 from a mount's JNow, altitude, airmass.

A mount reports where it points in apparent coordinates of the date (INDI's EQUATORIAL_EOD_COORD:
precessed, nutated and aberrated); FITS headers carry catalogue J2000 (OBJCTRA/OBJCTDEC, RA/DEC)
and, with the site, altitude, azimuth and airmass - what libindi's CCD writes. Accuracy here is a
few arcseconds, far below a pointing error: IAU 1976 precession (Lieske), the four largest terms of
the nutation series and the annual aberration with the Sun's low-precision longitude (Meeus,
Astronomical Algorithms, chapters 21-23 and 25); apparent to J2000 is the forward transform
inverted by iteration. Sidereal time is Meeus 12.4; airmass the 750-scale spherical-shell formula
libindi uses (1 at the zenith, about 27 on the horizon).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

J2000_JD = 2451545.0
_ARCSEC = math.pi / (180.0 * 3600.0)


def julian_date(when: datetime) -> float:
    """The Julian date of an instant (naive datetimes are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return 2440587.5 + when.timestamp() / 86400.0


def _precess(ra: float, dec: float, jd: float) -> tuple[float, float]:
    """Mean place of J2000 (radians) precessed to the mean equator and equinox of `jd`."""
    t = (jd - J2000_JD) / 36525.0
    zeta = (2306.2181 * t + 0.30188 * t * t + 0.017998 * t ** 3) * _ARCSEC
    z = (2306.2181 * t + 1.09468 * t * t + 0.018203 * t ** 3) * _ARCSEC
    theta = (2004.3109 * t - 0.42665 * t * t - 0.041833 * t ** 3) * _ARCSEC
    a = math.cos(dec) * math.sin(ra + zeta)
    b = math.cos(theta) * math.cos(dec) * math.cos(ra + zeta) - math.sin(theta) * math.sin(dec)
    c = math.sin(theta) * math.cos(dec) * math.cos(ra + zeta) + math.cos(theta) * math.sin(dec)
    return (math.atan2(a, b) + z) % (2 * math.pi), math.asin(max(-1.0, min(1.0, c)))


def _apparent(ra: float, dec: float, jd: float) -> tuple[float, float]:
    """J2000 mean place (radians) -> apparent place of `jd`: precession, nutation, aberration."""
    ra, dec = _precess(ra, dec, jd)
    t = (jd - J2000_JD) / 36525.0
    eps0 = math.radians(23.439291 - 0.0130042 * t)
    omega = math.radians(125.04452 - 1934.136261 * t)
    lsun = math.radians(280.4665 + 36000.7698 * t)
    lmoon = math.radians(218.3165 + 481267.8813 * t)
    dpsi = (-17.20 * math.sin(omega) - 1.32 * math.sin(2 * lsun) - 0.23 * math.sin(2 * lmoon)
            + 0.21 * math.sin(2 * omega)) * _ARCSEC
    deps = (9.20 * math.cos(omega) + 0.57 * math.cos(2 * lsun) + 0.10 * math.cos(2 * lmoon)
            - 0.09 * math.cos(2 * omega)) * _ARCSEC
    eps = eps0 + deps
    tan_d = math.tan(dec)
    dra = (math.cos(eps) + math.sin(eps) * math.sin(ra) * tan_d) * dpsi - math.cos(ra) * tan_d * deps
    ddec = math.sin(eps) * math.cos(ra) * dpsi + math.sin(ra) * deps
    # annual aberration (Meeus 23.3) with the Sun's true longitude (Meeus 25.2-25.4)
    m = math.radians(357.52911 + 35999.05029 * t)
    centre = math.radians((1.914602 - 0.004817 * t) * math.sin(m) + 0.019993 * math.sin(2 * m)
                          + 0.000289 * math.sin(3 * m))
    sun = math.radians(280.46646 + 36000.76983 * t) + centre
    e = 0.016708634 - 0.000042037 * t
    peri = math.radians(102.93735 + 1.71946 * t)
    k = 20.49552 * _ARCSEC
    cos_d = math.cos(dec) or 1e-12
    dra += (-k * (math.cos(ra) * math.cos(sun) * math.cos(eps) + math.sin(ra) * math.sin(sun))
            + e * k * (math.cos(ra) * math.cos(peri) * math.cos(eps) + math.sin(ra) * math.sin(peri))) / cos_d
    ddec += (-k * (math.cos(sun) * math.cos(eps) * (math.tan(eps) * math.cos(dec) - math.sin(ra) * math.sin(dec))
                   + math.cos(ra) * math.sin(dec) * math.sin(sun))
             + e * k * (math.cos(peri) * math.cos(eps) * (math.tan(eps) * math.cos(dec)
                                                           - math.sin(ra) * math.sin(dec))
                        + math.cos(ra) * math.sin(dec) * math.sin(peri)))
    return (ra + dra) % (2 * math.pi), dec + ddec


def j2000_to_jnow(ra_hours: float, dec_deg: float, when: datetime) -> tuple[float, float]:
    """A J2000 catalogue place (hours, degrees) as the apparent place at `when` (hours, degrees)."""
    ra, dec = _apparent(math.radians(ra_hours * 15.0), math.radians(dec_deg), julian_date(when))
    return math.degrees(ra) / 15.0, math.degrees(dec)


def jnow_to_j2000(ra_hours: float, dec_deg: float, when: datetime) -> tuple[float, float]:
    """An apparent place of `when` (a mount's JNow, hours and degrees) as J2000 (hours, degrees)."""
    jd = julian_date(when)
    target = (math.radians(ra_hours * 15.0), math.radians(dec_deg))
    ra, dec = target
    for _ in range(6):  # the transform is nearly a shift: a few steps converge to a milliarcsecond
        fra, fdec = _apparent(ra, dec, jd)
        dra = (target[0] - fra + math.pi) % (2 * math.pi) - math.pi
        ra, dec = (ra + dra) % (2 * math.pi), dec + (target[1] - fdec)
    return math.degrees(ra) / 15.0, math.degrees(dec)


def sidereal_time_deg(when: datetime, longitude_deg: float) -> float:
    """Local mean sidereal time in degrees at east longitude `longitude_deg`."""
    jd = julian_date(when)
    t = (jd - J2000_JD) / 36525.0
    gmst = 280.46061837 + 360.98564736629 * (jd - J2000_JD) + 0.000387933 * t * t - t ** 3 / 38710000.0
    return (gmst + longitude_deg) % 360.0


def horizontal(ra_hours: float, dec_deg: float, lat_deg: float, long_deg: float,
               when: datetime) -> tuple[float, float]:
    """(azimuth from north through east, altitude) in degrees of an apparent place at the site."""
    ha = math.radians(sidereal_time_deg(when, long_deg) - ra_hours * 15.0)
    dec, lat = math.radians(dec_deg), math.radians(lat_deg)
    alt = math.asin(max(-1.0, min(1.0, math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(ha))))
    az = math.atan2(-math.cos(dec) * math.sin(ha), math.sin(dec) * math.cos(lat) - math.cos(dec) * math.sin(lat)
                    * math.cos(ha))
    return math.degrees(az) % 360.0, math.degrees(alt)


def airmass(alt_deg: float, scale: float = 750.0) -> float:
    """Airmass at altitude `alt_deg` through a homogeneous spherical atmosphere (libindi's formula)."""
    a = scale * math.sin(math.radians(alt_deg))
    return math.sqrt(a * a + 2 * scale + 1) - a


def sexagesimal(value: float, fracbase: int = 360000) -> str:
    """`value` as "D MM SS.ss" (libindi's fs_sexa with width 2 and its ':' turned into spaces):
    whole part at least two wide, minutes and seconds two digits, hundredths of a second."""
    neg = value < 0
    n = int(abs(value) * fracbase + 0.5)
    whole, frac = divmod(n, fracbase)
    minutes, rest = divmod(frac, fracbase // 60)
    seconds, hundredths = divmod(rest, 100)
    head = f"{'-' if neg else ''}{whole}"
    return f"{head:>2} {minutes:02d} {seconds:02d}.{hundredths:02d}"
