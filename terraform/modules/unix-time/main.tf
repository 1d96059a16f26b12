# Unix seconds of a UTC RFC 3339 timestamp. Terraform has no built-in for it;
# the monitoring rules need it to know when the fleet plan is in force.
# Provider-free, tested offline with `terraform test`.

terraform {
  required_version = ">= 1.9.0"
}

variable "timestamp" {
  description = "A UTC timestamp in RFC 3339 form ending in Z, e.g. 2025-11-21T19:00:00Z."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$", var.timestamp)) && can(timeadd(var.timestamp, "0s"))
    error_message = "timestamp must be a valid UTC time like 2025-11-21T19:00:00Z (no fractional seconds, no offset)."
  }
}

locals {
  parts = [for p in split(" ", formatdate("YYYY M D h m s", var.timestamp)) : tonumber(p)]
  year  = local.parts[0]
  month = local.parts[1]
  day   = local.parts[2]

  # Days since 1970-01-01 in the proleptic Gregorian calendar, counting
  # years from March so that the leap day falls at the end of a year.
  y   = local.month <= 2 ? local.year - 1 : local.year
  era = floor(local.y / 400)
  yoe = local.y - local.era * 400
  mp  = (local.month + 9) % 12
  doy = floor((153 * local.mp + 2) / 5) + local.day - 1
  doe = local.yoe * 365 + floor(local.yoe / 4) - floor(local.yoe / 100) + local.doy

  days    = local.era * 146097 + local.doe - 719468
  seconds = local.days * 86400 + local.parts[3] * 3600 + local.parts[4] * 60 + local.parts[5]
}

output "seconds" {
  description = "Seconds since 1970-01-01T00:00:00Z."
  value       = local.seconds
}
