/** Boot-time check of a numeric plugin option: bad options fail ready(), with the plugin and option named. */
export function integerOption (plugin: string, name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`citas-live ${plugin} plugin: ${name} must be an integer of at least ${min}`)
  }
  return value
}
